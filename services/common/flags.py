"""The words Herald reads as yes or no, wherever a flag arrives as text (legacy parameters, URL query flags)."""

TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
FALSE_STRINGS = frozenset({"0", "false", "no", "off"})
