"""Short-lived, write-only SAS URLs for one dataset blob, so a client uploads a drop straight to storage.

A drop of several GB never passes through a function: the admin route hands out a URL for exactly
`datasets/<model>/<name>` and the client uploads to it in blocks. In Azure (identity-based storage,
AzureWebJobsStorage__accountName) the URL carries a user-delegation SAS signed with a key the app's
identity gets from storage (no account key exists: shared keys are disabled); locally (a connection
string with an account key, Azurite) a service SAS signed with that key. Either way: one blob
(`sr=b`), create + write only (no read, list or delete), UPLOAD_MINUTES long.
https://learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, UserDelegationKey, generate_blob_sas

from shared import names, paths
from shared.errors import BadRequest, ConfigurationError, StorageUnreachable
from shared.settings import DEV_STORAGE, STORAGE, STORAGE_ACCOUNT, Need, Settings

# The file types shared.data_checks.load_dataset reads (importing it here would load pandas at cold start).
DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
UPLOAD_MINUTES = 15
# The SAS starts a little in the past: a client (or storage) clock a few minutes off still gets a valid URL.
CLOCK_SKEW = timedelta(minutes=5)
# A user delegation key is asked for once per this long and reused for every SAS until near its end.
DELEGATION_KEY_HOURS = 2


@dataclass(frozen=True)
class UploadGrant:
    """Where to upload one dataset and until when."""

    url: str
    expires: datetime
    blob: str  # datasets/<model>/<name>

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "expires": self.expires.isoformat(), "blob": self.blob,
                "permissions": "create,write"}


def dataset_file_name(raw: object) -> str:
    """The `name` of an upload request: a safe blob name with a suffix the pipeline reads. Raises BadRequest."""
    if not isinstance(raw, str) or not raw:
        raise BadRequest("field 'name' is required: the file name of the dataset, e.g. data.csv")
    if not names.is_blob_file_name(raw):
        raise BadRequest(f"file name {raw[:80]!r} is not allowed: use a name without empty, '.' or '..' segments, "
                         "backslashes or control characters")
    if not raw.lower().endswith(DATA_SUFFIXES):
        raise BadRequest(f"file name {raw[:80]!r} has no dataset suffix: use {', '.join(DATA_SUFFIXES)}")
    return raw


class Signer:
    """Signs blob SAS tokens for one storage account: with its key, or with a user delegation key."""

    def __init__(self, client: BlobServiceClient, account_key: str | None) -> None:
        self._client = client
        self._account_key = account_key
        self._delegation: UserDelegationKey | None = None
        self._delegation_expiry: datetime | None = None
        self._containers: set[str] = set()
        self._lock = threading.Lock()

    def grant(self, container: str, blob: str, *, now: datetime, minutes: int = UPLOAD_MINUTES) -> UploadGrant:
        """A create+write SAS URL for exactly container/blob, valid from now - CLOCK_SKEW for `minutes`."""
        start, expiry = now - CLOCK_SKEW, now + timedelta(minutes=minutes)
        with _translated():
            self._ensure_container(container)
            key = {"account_key": self._account_key} if self._account_key else {
                "user_delegation_key": self._delegation_key(now, expiry)}
        token = generate_blob_sas(self._client.account_name or "", container, blob,
                                  permission=BlobSasPermissions(create=True, write=True), start=start, expiry=expiry,
                                  **key)
        url = self._client.get_blob_client(container, blob).url
        return UploadGrant(url=f"{url}?{token}", expires=expiry, blob=f"{container}/{blob}")

    def _ensure_container(self, container: str) -> None:
        # a SAS for one blob cannot create its container: make sure it exists (once per process)
        if container in self._containers:
            return
        try:
            self._client.get_container_client(container).create_container()
        except ResourceExistsError:
            pass
        self._containers.add(container)

    def _delegation_key(self, now: datetime, expiry: datetime) -> UserDelegationKey:
        with self._lock:
            if self._delegation is None or self._delegation_expiry is None or self._delegation_expiry < expiry:
                self._delegation_expiry = now + timedelta(hours=DELEGATION_KEY_HOURS)
                self._delegation = self._client.get_user_delegation_key(now - CLOCK_SKEW, self._delegation_expiry)
            return self._delegation


def grant_upload(settings: Settings, model: str, name: str, *, now: datetime) -> UploadGrant:
    """The upload grant for datasets/<model>/<name> (both already checked). Raises ConfigurationError,
    StorageUnreachable."""
    return signer_for(settings).grant(paths.DATASETS, f"{model}/{name}", now=now)


@lru_cache(maxsize=1)
def signer_for(settings: Settings) -> Signer:
    """The process-wide signer for these settings (a new one when the settings are rebuilt)."""
    settings.require(Need.STORAGE)
    retry: dict[str, Any] = {"retry_total": 2, "connection_timeout": 5, "read_timeout": 30}
    if settings.storage_connection_string:
        try:
            client = BlobServiceClient.from_connection_string(settings.storage_connection_string, **retry)
        except ValueError:
            raise ConfigurationError(f"{STORAGE} is invalid: use a storage connection string ({DEV_STORAGE} for "
                                     "Azurite)") from None
        account_key = getattr(client.credential, "account_key", None)
        if not account_key:
            raise ConfigurationError(f"{STORAGE} has no account key, so upload URLs cannot be signed: use a "
                                     f"connection string with AccountKey, or {STORAGE_ACCOUNT} (identity-based)")
        return Signer(client, account_key)
    from azure.identity import DefaultAzureCredential  # only needed in Azure

    uri = settings.storage_blob_uri or f"https://{settings.storage_account_name}.blob.core.windows.net"
    credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
    return Signer(BlobServiceClient(uri, credential=credential, **retry), None)


@contextmanager
def _translated() -> Iterator[None]:
    """Storage errors of signing as our errors: the answer says what to do, the log gets the rest."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnreachable("storage is unreachable: no answer; retry later",
                                 internal=f"upload grant: {type(exc).__name__}: {exc}") from exc
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise ConfigurationError(
                "the app's identity may not sign upload URLs: grant it 'Storage Blob Data Contributor' (which "
                "includes generateUserDelegationKey) on the storage account", internal=str(exc)) from exc
        if (exc.status_code or 0) >= 500 or exc.status_code == 429:
            raise StorageUnreachable(f"storage answered {exc.status_code}; retry later", internal=str(exc)) from exc
        raise
