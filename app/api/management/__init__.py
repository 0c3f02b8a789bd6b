"""The model-management API (/api/v1/*)."""
