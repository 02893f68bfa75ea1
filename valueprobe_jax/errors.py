"""The one exception type for bad user input: the CLI prints its message as a single line."""


class InputError(ValueError):
    """Bad input (file, model name, option, config value). The message names the input and what
    is wrong with it; no traceback is shown to the user."""
