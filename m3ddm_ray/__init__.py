"""m3ddm-ray: video outpainting (aspect-ratio change) with M3DDM, batched on Ray Data.

Layers, from the bottom up; a module imports only its own layer and those below
(``tests/test_layering.py`` checks it on the import graph, lazy imports included; no cycle):

1. :mod:`m3ddm_ray.errors`, :mod:`m3ddm_ray.rules` (value rules shared by several layers);
2. pure numpy / pyarrow / fsspec: :mod:`m3ddm_ray.geometry` (ratios, canvas, masks, crops),
   :mod:`m3ddm_ray.tiles` (spatial tiles over a working frame, their fusion weights),
   :mod:`m3ddm_ray.plan` (window plan), :mod:`m3ddm_ray.storage` (fsspec, atomic writes, retries),
   :mod:`m3ddm_ray.quality` (frame checks, no-reference numbers), :mod:`m3ddm_ray.distributed.manifest`
   (manifests; pure despite its folder), :mod:`m3ddm_ray.masks` (training mask policies, per-frame
   mask rules, synthetic object masks), :mod:`m3ddm_ray.task` (the tasks -- outpaint, inpaint,
   extend -- and everything that differs between them);
3. I/O: :mod:`m3ddm_ray.video` (PyAV over fsspec, frame folders, mask sources),
   :mod:`m3ddm_ray.canvas_file` (keyframe canvases of long clips in a scratch file),
   :mod:`m3ddm_ray.coarse_file` (their coarse latents in a scratch file, read per segment);
4. model: :mod:`m3ddm_ray.models` (the M3DDM UNet and loaders), :mod:`m3ddm_ray.sampling` (one
   window, PNDM + guidance), :mod:`m3ddm_ray.sampling_tiles` (the fused tiled sampler),
   :mod:`m3ddm_ray.settings` (the run settings, torch-free);
5. :mod:`m3ddm_ray.latents` (VAE latents of a clip); then :mod:`m3ddm_ray.prepare`: one streaming
   preparation pass for every task and length; then :mod:`m3ddm_ray.pipeline`: the windows of a
   prepared clip and its finalize, any task, no Ray; then :mod:`m3ddm_ray.tiled`: the border
   at a working resolution by fused tiles;
6. :mod:`m3ddm_ray.distributed`: Ray Data stages that wrap the pipeline, the batch job;
7. :mod:`m3ddm_ray.evaluation`: benchmark evaluation on the job's stages and pools;
8. :mod:`m3ddm_ray.cli`: the command line.
"""

__version__ = "0.1.0"
