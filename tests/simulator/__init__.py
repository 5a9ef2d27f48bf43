"""Tests of the TotalVoice simulator, driven in-process over httpx.ASGITransport."""
