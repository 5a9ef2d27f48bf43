"""A local TotalVoice (Zenvia Voice) conference API, as strict and as messy as the real one."""
