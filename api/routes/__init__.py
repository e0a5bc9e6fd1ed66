"""The API's routers, one per job: auth, incidents, work orders, crews, evaluation, Open311."""
