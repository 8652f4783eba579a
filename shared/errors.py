"""One error tree for the app: each error carries its HTTP status and a message a user can act on.

Messages name the thing in key=value form and say what to do, e.g.
"model version (name=churn, version=7) not found".
"""
from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the app raises on purpose."""

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: object | None = None, internal: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # For the function log only (endpoints, raw driver errors): never in an HTTP answer.
        self.internal = internal


class BadRequest(PipelineError):
    """The request is malformed (bad JSON, missing field, wrong type)."""

    status = 400
    code = "BAD_REQUEST"


class InvalidParameter(BadRequest):
    """A name, alias, version or id in a route, query or header does not fit its rule (shared/names.py)."""

    code = "INVALID_PARAMETER_VALUE"


class InvalidSpec(BadRequest):
    """A training spec failed validation; details lists every problem."""

    code = "INVALID_SPEC"


class DataRejected(PipelineError):
    """A dataset failed the spec's data checks; details holds the rejection report."""

    status = 422
    code = "DATA_REJECTED"


class Unauthorized(PipelineError):
    """Missing or wrong key, signature or credentials."""

    status = 401
    code = "UNAUTHORIZED"


class NotFound(PipelineError):
    """The named resource does not exist."""

    status = 404
    code = "RESOURCE_DOES_NOT_EXIST"


class Conflict(PipelineError):
    """A conditional write lost a race (ETag mismatch or blob already exists)."""

    status = 409
    code = "CONFLICT"


class PayloadTooLarge(PipelineError):
    """The request body exceeds the configured limit."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(PipelineError):
    """The request's content type is not one we accept."""

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Unavailable(PipelineError):
    """The resource exists but cannot serve yet (e.g. a model with no champion)."""

    status = 503
    code = "TEMPORARILY_UNAVAILABLE"


class UpstreamError(PipelineError):
    """A service this request depends on (GitHub, Azure DevOps, the git CLI) answered something unusable."""

    status = 502
    code = "UPSTREAM_ERROR"


class ConfigurationError(PipelineError):
    """A setting this function needs is missing or invalid; the message names it and what it is for."""

    status = 503
    code = "CONFIGURATION"


class StorageUnreachable(PipelineError):
    """Storage (Azure or Azurite) did not answer."""

    status = 503
    code = "STORAGE_UNREACHABLE"


class InProgress(PipelineError):
    """Another delivery of the same work is being handled right now; try again later."""

    status = 409
    code = "IN_PROGRESS"


class ModelRejected(PipelineError):
    """Training or export failed in a way every retry would repeat; change the data or the spec.

    details holds a report shaped like a data rejection report ({"status", "stage", "problems"}).
    """

    status = 422
    code = "MODEL_REJECTED"


class IllegalTransition(Conflict):
    """A lifecycle move the state machine does not allow (e.g. approving a rejected version)."""

    code = "ILLEGAL_TRANSITION"


class ArtifactCorrupt(PipelineError):
    """A stored artifact is missing or fails its recorded sha256: it was changed after registration."""

    status = 409
    code = "ARTIFACT_CORRUPT"
