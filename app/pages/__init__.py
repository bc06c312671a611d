"""One package per page of the main window: contribute/, train/, loop/, results/, settings/. Pages never import each
other; they share app/widgets.py, app/charts/ and the job runner (app/jobs/)."""
