import torch

from host.layers import SignActivation, approx_sign, binarize, ste_sign


def test_sign_of_zero_is_plus_one():
    assert binarize(torch.tensor([-0.5, 0.0, 0.5])).tolist() == [-1.0, 1.0, 1.0]


def test_ste_passes_gradient_only_inside_its_window():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.9, 1.5], requires_grad=True)
    ste_sign(x, 1.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_approx_sign_gradient_falls_linearly_to_zero_at_the_window():
    x = torch.tensor([0.0, 0.5, 1.0, 2.0], requires_grad=True)
    approx_sign(x, 1.0).sum().backward()
    assert x.grad.tolist() == [2.0, 1.0, 0.0, 0.0]


def test_gradual_binarisation_blends_in_training_and_is_pure_sign_in_eval():
    act = SignActivation()
    act.mix = 0.25
    x = torch.tensor([-3.0, -0.4, 0.2, 0.8])
    act.train()
    expected = 0.25 * binarize(x) + 0.75 * x.clamp(-1, 1)
    assert torch.allclose(act(x), expected)
    act.eval()
    assert act(x).tolist() == [-1.0, -1.0, 1.0, 1.0]


def _composed(x, estimator, mix):
    """The sign activation written as separate autograd pieces: what the fused node replaces."""
    y = (ste_sign if estimator == "ste" else approx_sign)(x, 1.0)
    return mix * y + (1.0 - mix) * x.clamp(-1.0, 1.0) if mix < 1.0 else y


def test_fused_sign_activation_has_the_composed_forward_and_gradient():
    gen = torch.Generator().manual_seed(3)
    for estimator in ("ste", "approx"):
        for mix in (0.0, 0.3, 1.0):
            x = (torch.randn(2, 3, 5, 5, generator=gen) * 1.5).requires_grad_()
            g = torch.randn(2, 3, 5, 5, generator=gen)
            act = SignActivation(estimator, 1.0)
            act.mix = mix
            act.train()
            y = act(x)
            (gx,) = torch.autograd.grad(y, x, g)
            x2 = x.detach().requires_grad_()
            y2 = _composed(x2, estimator, mix)
            (gx2,) = torch.autograd.grad(y2, x2, g)
            assert torch.allclose(y, y2), (estimator, mix)
            assert torch.allclose(gx, gx2, atol=1e-6), (estimator, mix)


def test_saturation_is_the_share_outside_the_window_in_sampled_batches():
    act = SignActivation("approx", 1.0)
    act.train()
    for _ in range(SignActivation.SAMPLE_EVERY):
        act(torch.tensor([-3.0, -0.5, 0.5, 2.0]))
    assert act.take_saturation() == 0.5
    assert act.take_saturation() == 0.0
