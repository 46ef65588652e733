"""Offline evaluation of outpainted videos against ground truth (PSNR, SSIM, LPIPS, FVD, BMSE)."""
