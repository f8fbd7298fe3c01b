"""Images: references, the registry client, the content store (blobs), the layer store (unpacked layers) and the image records."""
