pytest_plugins = ["mmalign_core.testing"]
