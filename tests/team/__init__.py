"""Team mode: a shared MLflow tracking server and DVC remote, and the browser views."""
