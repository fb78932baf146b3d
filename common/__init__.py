"""Small helpers shared by every room of the project; no torch, no SQLite, no gradio."""
