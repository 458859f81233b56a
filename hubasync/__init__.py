"""hubasync: an asyncio-native download engine for the Hugging Face Hub."""

from __future__ import annotations
