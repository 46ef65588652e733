"""m3ddm-ray: video outpainting (aspect-ratio change) with M3DDM, batched on Ray Data.

Layers, from the bottom up (nothing reaches back up):

* pure numpy: :mod:`m3ddm_ray.geometry` (ratios, canvas, masks, crops), :mod:`m3ddm_ray.plan`
  (window plan), :mod:`m3ddm_ray.distributed.manifest` (manifests);
* I/O: :mod:`m3ddm_ray.video` (PyAV + fsspec);
* model: :mod:`m3ddm_ray.models` (the M3DDM UNet and loaders);
* sampling: :mod:`m3ddm_ray.sampling` (one window, PNDM + guidance);
* :mod:`m3ddm_ray.pipeline`: one video in memory -> outpainted frames, no Ray;
* :mod:`m3ddm_ray.distributed`: Ray Data stages that wrap the pipeline.
"""

__version__ = "0.1.0"
