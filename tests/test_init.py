"""AGD's initialisation: every (sub-)matrix has all singular values equal to s_k."""

import torch

from agd_ray.models import FCN
from agd_ray.models.resnet import preact_resnet18
from agd_ray.optim import orthogonal_init_, scale


def _singular_values(p):
    sub = p.detach().reshape(p.shape[0], p.shape[1], -1)
    return [torch.linalg.svdvals(sub[:, :, i]) for i in range(sub.shape[2])]


def test_fcn_singular_values_equal_scale():
    model = orthogonal_init_(FCN(4, 64, 40, 10))
    for p in model.parameters():
        (sv,) = _singular_values(p)
        assert torch.allclose(sv, torch.full_like(sv, scale(p)), rtol=1e-4)


def test_conv_kernels_per_submatrix():
    model = orthogonal_init_(preact_resnet18(3, 10, width=8))
    kernels = [p for p in model.parameters() if p.ndim == 4]
    assert kernels
    for p in kernels:
        for sv in _singular_values(p):
            assert torch.allclose(sv, torch.full_like(sv, scale(p)), rtol=1e-4)


def test_init_is_random_but_seeded():
    a = orthogonal_init_(FCN(2, 8, 4, 2)) if torch.manual_seed(1) else None
    b = orthogonal_init_(FCN(2, 8, 4, 2)) if torch.manual_seed(1) else None
    c = orthogonal_init_(FCN(2, 8, 4, 2)) if torch.manual_seed(2) else None
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
