"""The networks behind the evaluation's learned metrics, with their checkpoint loaders: the LPIPS
AlexNet (:mod:`.lpips`) and the I3D of FVD (:mod:`.i3d`); :mod:`.checkpoints` reads their files.
The metrics themselves (inputs, preprocessing, scores) are :mod:`m3ddm_ray.evaluation.metrics`."""
