"""Fast paths behind the cells' `sequence` hook, and rematerialisation over chunks of time."""
