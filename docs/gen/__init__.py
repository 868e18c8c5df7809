"""What the docs site generates from the code and the shipped model at build time (mkdocs hooks)."""
