"""A blob trigger's argument as the Python worker builds it: trigger metadata from the host, then BlobConverter.

The host's blob trigger binding data is {"BlobTrigger": "<container>/<name>", "Uri": Uri, "Properties":
BlobProperties (Azure.Storage.Blobs v12), "Metadata": IDictionary<string, string>} plus the path pattern's
parameters (Microsoft.Azure.WebJobs.Extensions.Storage.Blobs, Triggers/BlobTriggerBinding.cs). The host sends
strings as typed string data and every other value as JSON made by Newtonsoft with default settings
(azure-functions-host, RpcMessageConversionExtensions.ToRpcDefault: JsonConvert.SerializeObject(value)).
So, exactly as a function on Azure sees them:
- enums are numbers ("BlobType": 0 is Block), DateTimeOffset is "2023-05-31T13:28:51+00:00";
- "ETag" is {}: Azure.ETag is a struct with no public properties, which Newtonsoft writes as an empty
  object (captured payloads show "ETag": {}); read a blob's ETag from storage, not from blob_properties.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import ResourceNotFoundError
from azure.functions import meta
from azure.functions.blob import BlobConverter, InputStream
from azure.storage.blob import BlobProperties

from shared.errors import NotFound
from shared.storage import AzureStorage

NET_MIN_DATE = "0001-01-01T00:00:00+00:00"  # default(DateTimeOffset) as Newtonsoft writes it
# Azure.Storage.Blobs.Models enums, by their .NET values
BLOB_TYPES = {"BlockBlob": 0, "PageBlob": 1, "AppendBlob": 2}
COPY_STATUS = {"pending": 0, "success": 1, "aborted": 2, "failed": 3}
LEASE_DURATION = {"infinite": 0, "fixed": 1}
LEASE_STATE = {"available": 0, "leased": 1, "expired": 2, "breaking": 3, "broken": 4}
LEASE_STATUS = {"locked": 0, "unlocked": 1}


@dataclass(frozen=True)
class DownloadedBlob:
    """The bytes of one blob version with the properties of that same version (one GET); no bytes (b"") when
    the function binds an SDK type, which reads the blob itself."""

    container: str
    name: str
    data: bytes
    properties: BlobProperties
    uri: str

    @property
    def etag(self) -> str:
        return str(self.properties.etag)


def blob_uri(storage: AzureStorage, container: str, name: str) -> str:
    """The blob's URL as BlobClient.Uri gives it (path-style on Azurite)."""
    return f"{storage.blob_endpoint.rstrip('/')}/{container}/{quote(name)}"


def download(storage: AzureStorage, container: str, name: str) -> DownloadedBlob:
    """Data and properties in one download, so the properties describe exactly these bytes.

    shared.storage.AzureStorage.read returns data and ETag only; the host needs the whole BlobProperties,
    so this reads through the gateway's BlobServiceClient. Raises NotFound when the blob is gone.
    """
    client = storage._blobs.get_blob_client(container, name)  # the gateway's own client (same credentials)
    try:
        downloader = client.download_blob()
        data = downloader.readall()
    except ResourceNotFoundError as exc:
        raise NotFound(f"blob (container={container}, path={name}) not found") from exc
    return DownloadedBlob(container, name, data, downloader.properties, blob_uri(storage, container, name))


def fetch(storage: AzureStorage, container: str, name: str, *, data: bool) -> DownloadedBlob:
    """download(), or with data=False only the properties (for an SDK-type binding). Raises NotFound."""
    if data:
        return download(storage, container, name)
    found = properties(storage, container, name)
    if found is None:
        raise NotFound(f"blob (container={container}, path={name}) not found")
    return DownloadedBlob(container, name, b"", found, blob_uri(storage, container, name))


def properties(storage: AzureStorage, container: str, name: str) -> BlobProperties | None:
    """The blob's current properties (None when it is gone), through the gateway's BlobServiceClient."""
    try:
        return storage._blobs.get_blob_client(container, name).get_blob_properties()
    except ResourceNotFoundError:
        return None


def net_datetime(moment: datetime | None, *, nullable: bool = False) -> str | None:
    """A DateTimeOffset as Newtonsoft writes it: seconds, then up to 7 fractional digits without trailing zeros."""
    if moment is None:
        return None if nullable else NET_MIN_DATE
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.strftime("%z") or "+0000"
    return f"{text}{offset[:3]}:{offset[3:]}"


def _copy(props: BlobProperties) -> dict[str, Any]:
    copy = props.copy
    status = COPY_STATUS.get(str(copy.status or "").lower()) if copy.status else None
    return {
        "CopyCompletedOn": net_datetime(copy.completion_time),
        "CopyStatusDescription": copy.status_description,
        "CopyId": copy.id,
        "CopyProgress": copy.progress,
        "CopySource": copy.source,
        "CopyStatus": status or 0,
        "BlobCopyStatus": status,
        "IsIncrementalCopy": bool(copy.incremental_copy),
        "DestinationSnapshot": copy.destination_snapshot,
    }


def _lease(props: BlobProperties) -> dict[str, Any]:
    lease = props.lease
    return {
        "LeaseDuration": LEASE_DURATION.get(str(lease.duration or "").lower(), 0),
        "LeaseState": LEASE_STATE.get(str(lease.state or "").lower(), 0),
        "LeaseStatus": LEASE_STATUS.get(str(lease.status or "").lower(), 1),
    }


def _content(props: BlobProperties) -> dict[str, Any]:
    settings = props.content_settings
    md5 = settings.content_md5
    return {
        "ContentLength": int(props.size or 0),
        "ContentType": settings.content_type,
        "ETag": {},  # Azure.ETag through Newtonsoft (see the module docstring)
        "ContentHash": base64.b64encode(bytes(md5)).decode("ascii") if md5 else None,
        "ContentEncoding": settings.content_encoding,
        "ContentDisposition": settings.content_disposition,
        "ContentLanguage": settings.content_language,
        "CacheControl": settings.cache_control,
    }


def _tier(props: BlobProperties) -> dict[str, Any]:
    return {
        "AccessTier": str(props.blob_tier) if props.blob_tier else None,
        "AccessTierInferred": bool(props.blob_tier_inferred),
        "ArchiveStatus": props.archive_status,
        "AccessTierChangedOn": net_datetime(props.blob_tier_change_time),
    }


def blob_properties_json(props: BlobProperties) -> dict[str, Any]:
    """Azure.Storage.Blobs.Models.BlobProperties as the host serializes it, in its property order."""
    blob_type = getattr(props.blob_type, "value", props.blob_type) or "BlockBlob"
    policy = props.immutability_policy
    return {
        "LastModified": net_datetime(props.last_modified),
        "CreatedOn": net_datetime(props.creation_time),
        "Metadata": dict(props.metadata or {}),
        "ObjectReplicationDestinationPolicyId": props.object_replication_destination_policy,
        "ObjectReplicationSourceProperties": None,
        "BlobType": BLOB_TYPES.get(str(blob_type), 0),
        **_copy(props),
        **_lease(props),
        **_content(props),
        "BlobSequenceNumber": int(props.page_blob_sequence_number or 0),
        "AcceptRanges": "bytes",
        "BlobCommittedBlockCount": int(props.append_blob_committed_block_count or 0),
        "IsServerEncrypted": bool(props.server_encrypted),
        "EncryptionKeySha256": props.encryption_key_sha256,
        "EncryptionScope": props.encryption_scope,
        **_tier(props),
        "VersionId": props.version_id,
        "IsLatestVersion": bool(props.is_current_version),
        "TagCount": int(props.tag_count or 0),
        "ExpiresOn": NET_MIN_DATE,
        "IsSealed": bool(props.is_append_blob_sealed),
        "RehydratePriority": props.rehydrate_priority,
        "LastAccessed": net_datetime(props.last_accessed_on),
        "ImmutabilityPolicy": {
            "ExpiresOn": net_datetime(policy.expiry_time, nullable=True) if policy else None,
            "PolicyMode": None,
        },
        "HasLegalHold": bool(props.has_legal_hold),
    }


def trigger_metadata(blob: DownloadedBlob, path_params: Mapping[str, str]) -> dict[str, meta.Datum]:
    """The binding data the host sends with a blob trigger invocation, as the worker receives it."""
    metadata = {
        "BlobTrigger": meta.Datum(type="string", value=f"{blob.container}/{blob.name}"),
        "Uri": meta.Datum(type="json", value=json.dumps(blob.uri)),
        "Properties": meta.Datum(type="json", value=json.dumps(blob_properties_json(blob.properties))),
        "Metadata": meta.Datum(type="json", value=json.dumps(dict(blob.properties.metadata or {}))),
    }
    for name, value in path_params.items():
        metadata.setdefault(name, meta.Datum(type="string", value=value))  # strings travel as string data
    return metadata


@dataclass(frozen=True)
class ModelBindingData:
    """The host's reference to a blob for an SDK-type binding (the RPC message ModelBindingData), as the worker
    extension reads it: JSON content naming the connection setting, the container and the blob."""

    content: bytes
    version: str = "1.0"
    source: str = "AzureStorageBlobs"
    content_type: str = "application/json"


def trigger_argument(blob: DownloadedBlob, path_params: Mapping[str, str], trigger: Mapping[str, Any],
                     sdk_type: Any) -> Any:
    """The blob trigger's argument: the SDK client the worker extension makes from the host's reference when the
    function binds an SDK type (sdk_type), else a func.InputStream over the downloaded bytes."""
    if sdk_type is None:
        return input_stream(blob, path_params)
    from azurefunctions.extensions.base import Datum, get_binding_registry  # present: sdk_type was recognised

    content = json.dumps({"Connection": trigger.get("connection") or "AzureWebJobsStorage",
                          "ContainerName": blob.container, "BlobName": blob.name})
    converter = get_binding_registry().get(str(trigger["type"]))
    return converter.decode(Datum(ModelBindingData(content.encode()), "model_binding_data"),
                            trigger_metadata=trigger_metadata(blob, path_params), pytype=sdk_type)


def input_stream(blob: DownloadedBlob, path_params: Mapping[str, str]) -> InputStream:
    """The func.InputStream argument, made by the worker's own converter from the data and trigger metadata."""
    stream = BlobConverter.decode(meta.Datum(type="bytes", value=blob.data),
                                  trigger_metadata=trigger_metadata(blob, path_params))
    assert isinstance(stream, InputStream)
    return stream
