"""EDM preconditioning (Karras et al. 2022, Table 1) around any backbone F.

f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t)), with sigma_data = 0.5.
The backbone is stored as `self.model`, as in EDM, so EDM state dicts keep their key names.
"""

from __future__ import annotations

import torch
from torch import nn


def edm_coefficients(
    t: torch.Tensor, sigma_data: float, sigma_min: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) at noise level t.

    With sigma_min > 0, c_skip and c_out are shifted by it (the consistency boundary used at
    sampling in the authors' code): c_skip(sigma_min) = 1 and c_out(sigma_min) = 0, so f(x, sigma_min) = x.
    """
    sd2 = sigma_data**2
    c_skip = sd2 / ((t - sigma_min) ** 2 + sd2)
    c_out = (t - sigma_min) * sigma_data / (t**2 + sd2).sqrt()
    c_in = 1 / (t**2 + sd2).sqrt()
    c_noise = t.log() / 4
    return c_skip, c_out, c_in, c_noise


class Precond(nn.Module):
    """The consistency / denoising function f_theta(x, t) of ECT."""

    def __init__(self, model: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.0, label_dim: int = 0):
        super().__init__()
        self.model = model
        self.sigma_data = sigma_data
        self.sigma_min = sigma_min
        self.label_dim = label_dim

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        boundary: bool = False,
    ) -> torch.Tensor:
        """Denoise x at noise level t (shape [N] or broadcastable scalar).

        `boundary=True` applies the sigma_min shift; use it when sampling the consistency model.
        `class_labels` may be integer class ids [N] or one-hot rows [N, label_dim].
        """
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        t_b = t.reshape(-1, *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = edm_coefficients(t_b, self.sigma_data, self.sigma_min if boundary else 0.0)
        labels = self._one_hot(class_labels, x)
        F_x = self.model((c_in * x), c_noise.reshape(-1), labels)
        return c_skip * x + c_out * F_x.to(x.dtype)

    def _one_hot(self, class_labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if self.label_dim == 0:
            return None
        if class_labels is None:
            raise ValueError("this network is class-conditional: class labels are required")
        if class_labels.ndim == 1:
            return nn.functional.one_hot(class_labels.long(), self.label_dim).to(x.dtype)
        return class_labels.to(x.dtype)
