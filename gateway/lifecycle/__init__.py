"""The personal data lifecycle: what is stored encrypted, how long it is kept, and a
data subject's erasure request (docs/data-protection.md)."""
