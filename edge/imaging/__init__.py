"""Image data shared by the edge and the host: the model's preprocessing (preprocess), a still
image read as several shifted and turned views (views), image folders (imagefolder) and the box
renderer with its code styles (box_images, code_styles)."""
