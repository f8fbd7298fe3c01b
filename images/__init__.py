"""Images: references, the registry client, the content store, layer unpacking and the image store."""
