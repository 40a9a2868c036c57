"""Reports: rich tables for people, CSV / JSONL for machines."""
