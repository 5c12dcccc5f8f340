"""Image-grounded preference losses: answers preferred because of the image (see docs/losses.md)."""
