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
