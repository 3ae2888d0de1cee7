"""The auth domain's enumerations, stored by value."""

from enum import StrEnum


class ApiKeyScope(StrEnum):
    FULL = "full"  # everything the user may do
    READ = "read"  # GET and HEAD only
