"""Upload grants (shared/uploads.py): file names the pipeline can read, and SAS tokens scoped to one blob with
create+write only, signed with an account key locally or a user delegation key in Azure."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient, UserDelegationKey

from shared.data_checks import load_dataset
from shared.errors import BadRequest, ConfigurationError, DataRejected
from shared.settings import Settings
from shared.uploads import DATA_SUFFIXES, UPLOAD_MINUTES, Signer, dataset_file_name, signer_for

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["data.csv", "2026/11/drop.parquet", "x.JSONL", "a b.ndjson"])
def test_dataset_names_the_pipeline_reads_are_accepted(name: str) -> None:
    assert dataset_file_name(name) == name


@pytest.mark.parametrize(("name", "words"), [
    (None, "required"), ("", "required"), (7, "required"), ("../x.csv", "'..'"), ("a//b.csv", "empty"),
    ("x\n.csv", "control"), ("x.txt", "dataset suffix"), ("x.csv.gz", "dataset suffix"),
])
def test_other_names_are_refused_naming_the_rule(name: object, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        dataset_file_name(name)
    assert words in refused.value.message


def test_the_suffixes_are_exactly_what_the_pipeline_loads() -> None:
    for suffix in DATA_SUFFIXES:
        with pytest.raises(DataRejected) as unreadable:
            load_dataset(b"\xff\xfe not data", f"x{suffix}")
        assert "unknown extension" not in unreadable.value.message
    with pytest.raises(DataRejected, match="unknown extension"):
        load_dataset(b"a\n1\n", "x.txt")


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_an_account_key_sas_is_for_one_blob_create_and_write_only_and_minutes_long() -> None:
    signer = signer_for(Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}))
    signer._containers.add("datasets")  # no storage here: the container is taken as made
    grant = signer.grant("datasets", "churn/data.csv", now=NOW)
    query = _query(grant.url)
    assert urlsplit(grant.url).path == "/devstoreaccount1/datasets/churn/data.csv"
    assert (query["sr"], query["sp"]) == ("b", "cw")
    assert grant.expires == NOW + timedelta(minutes=UPLOAD_MINUTES) and query["se"] == "2026-11-24T12:15:00Z"
    assert query["st"] == "2026-11-24T11:55:00Z"  # five minutes back for clocks that run behind
    assert "skoid" not in query  # signed with the account key
    assert grant.to_json()["blob"] == "datasets/churn/data.csv"


def test_a_user_delegation_sas_carries_the_delegation_key_and_is_reused() -> None:
    client = BlobServiceClient("https://acct.blob.core.windows.net")
    signer = Signer(client, None)
    signer._containers.add("datasets")
    asked: list[datetime] = []

    def delegation_key(start: datetime, expiry: datetime) -> UserDelegationKey:
        asked.append(expiry)
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid, key.signed_service, key.signed_version = "oid-1", "tid-1", "b", "2025-01-05"
        key.signed_start, key.signed_expiry = "2026-11-24T11:55:00Z", expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.value = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
        return key

    client.get_user_delegation_key = delegation_key  # type: ignore[method-assign]  # Azure's side of the exchange
    first = _query(signer.grant("datasets", "churn/a.csv", now=NOW).url)
    second = _query(signer.grant("datasets", "churn/b.csv", now=NOW + timedelta(minutes=30)).url)
    assert (first["skoid"], first["sktid"], first["sp"], first["sr"]) == ("oid-1", "tid-1", "cw", "b")
    assert second["skoid"] == "oid-1" and len(asked) == 1  # one key for many grants, until near its end
    signer.grant("datasets", "churn/c.csv", now=NOW + timedelta(hours=3))
    assert len(asked) == 2


def test_a_connection_string_without_an_account_key_cannot_sign() -> None:
    sas_only = "BlobEndpoint=https://acct.blob.core.windows.net/;QueueEndpoint=https://acct.queue.core.windows.net/;" \
               "SharedAccessSignature=sv=2024&sig=abc"
    with pytest.raises(ConfigurationError, match="no account key"):
        signer_for(Settings.from_env({"AzureWebJobsStorage": sas_only}))
