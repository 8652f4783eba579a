"""The function app: one FunctionApp, one Blueprint per trigger module (a table of contents)."""
import azure.functions as func

from functions import (
    admin,
    batch_score,
    contract,
    export,
    health,
    monitor,
    poison,
    prepare,
    retrain,
    score,
    sweeper,
    train,
    ui,
    uploads,
    validate,
    webhooks,
)
from shared.memory_tuning import keep_freed_memory
from shared.settings import log_startup_problems

log_startup_problems()  # the host log names every missing or invalid setting when the app loads
keep_freed_memory()  # big requests reuse the heap instead of faulting in fresh pages (shared/memory_tuning.py)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health.bp)  # GET /api/health
app.register_functions(prepare.bp)  # blob datasets/{model}/{name}
app.register_functions(train.bp)  # queue train-requests
app.register_functions(export.bp)  # queue export-requests
app.register_functions(validate.bp)  # queue validate-requests
app.register_functions(retrain.bp)  # queue retrain-requests
app.register_functions(poison.bp)  # queues *-poison of the stages
app.register_functions(sweeper.bp)  # timer: expired leases, unsynced alias flips
app.register_functions(admin.bp)  # /api/registry/...
app.register_functions(webhooks.bp)  # /api/webhooks/github, /api/webhooks/azure-devops
app.register_functions(score.bp)  # POST /api/models/{model}/score
app.register_functions(batch_score.bp)  # blob scoring-requests/{model}/{name}
app.register_functions(contract.bp)  # GET /api/models/{model}/signature, /api/openapi.json
app.register_functions(uploads.bp)  # POST /api/registry/models/{model}/uploads: a SAS URL for a drop
app.register_functions(monitor.bp)  # timer + monitor-requests; /api/models/{model}/feedback; .../monitoring
app.register_functions(ui.bp)  # GET /api/ui, /api/ui/models/{model}: model pages in the browser
