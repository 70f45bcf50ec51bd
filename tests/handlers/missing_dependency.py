"""A module whose own import of a dependency fails."""

import scaler_fixture_dependency_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401
