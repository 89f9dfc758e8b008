"""Measurements of behaviour: emoji detection and emoji-token masks, trait metrics, self-explanation prompts."""
