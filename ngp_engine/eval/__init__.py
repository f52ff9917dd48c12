"""Quality metrics: images (PSNR, SSIM) and meshes (Chamfer, normal consistency, IoU)."""
