"""Long-context tasks: haystacks, needle-in-a-haystack, the 13 RULER tasks, scoring."""
