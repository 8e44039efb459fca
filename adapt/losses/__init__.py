"""Training losses, one term per module: pixel (`l1`), `perceptual` (VGG19 features), `ldl`
(artifact map), `ff` (focal frequency), `dists` (DISTS, with its learned weights) and the
adversarial term (`gan`, with its U-Net discriminator). `spec` parses
`--loss l1:1,perceptual:1,gan:0.1` without torch; `objective` builds the weighted sum."""
