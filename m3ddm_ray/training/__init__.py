"""Training and fine-tuning of the M3DDM UNet (plain loop + Ray Train adapter).

Modules: :mod:`.sources` (videos / photo pans -> random clips), :mod:`.data` (in-process and Ray Data
feeding), :mod:`.objective` (ε-prediction with CFG dropouts), :mod:`.vae` (small VAE + latent
whitening), :mod:`.loop` (the plain training function), :mod:`.checkpoint` (released-format
checkpoints + state), :mod:`.ray_train` (TorchTrainer), :mod:`.cli` (``m3ddm-ray train``).
"""
