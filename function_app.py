"""The function app: one FunctionApp, one Blueprint per trigger module (a table of contents)."""
import azure.functions as func

from functions import health

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health.bp)
