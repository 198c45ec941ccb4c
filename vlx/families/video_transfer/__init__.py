"""Image->video transfer: an image-text model (a vlx CLIP, trained or imported) read frame by
frame with the frames folded into the batch, time added either on top of frozen features
(temporal.py: mean pooling, a temporal transformer) or inside the image backbone (adapters.py:
ST-Adapter, AIM; or full fine-tuning). model.py joins them; every temporal piece starts as
the identity of the image model. Nothing is imported here: vlx/components.py lists the
modules."""
