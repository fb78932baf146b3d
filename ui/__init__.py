"""The Gradio app's wiring: services shared by all users, one module per tab, ``build_ui`` in ``ui.app``."""
