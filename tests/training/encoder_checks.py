"""Data-free checks of a loaded EfficientNet-Lite encoder, shared by the Lite0 and Lite2 tests."""

from __future__ import annotations


def residual_chain_errors(encoder) -> list[float]:
    """Per expanding block, max|W_expand · (block input mean) − expand-BN running mean| / max|running mean|.

    In training, BN output has batch mean exactly beta, so the running mean of a block's expand-BN equals
    W_expand · (mean of the block input), where that input mean is the sum of the project-BN betas back along
    the residual chain. Small errors pin block order, key mapping and where the residual connections are.
    """
    input_mean, errors = None, []
    for b, block in enumerate(encoder._blocks):
        if b > 0 and block.has_expand:
            predicted = block._expand_conv.weight[:, :, 0, 0] @ input_mean
            stored = block._bn0.running_mean
            errors.append(((predicted - stored).abs().max() / stored.abs().max()).item())
        beta = block._bn2.bias
        input_mean = beta + input_mean if block.has_residual else beta
    return errors
