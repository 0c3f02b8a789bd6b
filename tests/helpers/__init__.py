"""Test helpers (fake Hugging Face Hub, fixtures data)."""
