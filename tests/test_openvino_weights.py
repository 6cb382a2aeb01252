"""The torch weights of --backend openvino (sdgen/engine/openvino_weights.py): a module dropped to an empty one
after its part is converted, a kept submodule (the text encoder's final layer norm) copied out of the loaded
file's memory, and the weights loaded back in place from the loader."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from sdgen.engine.openvino_weights import TorchWeights, is_empty
from sdgen.engine.text import final_layer_norm


def test_drop_empties_the_module_and_copies_what_it_keeps(tiny_parts):
    encoder = copy.deepcopy(tiny_parts.text_encoder)
    norm = final_layer_norm(encoder)
    before = {name: (tensor.data_ptr(), tensor.clone()) for name, tensor in norm.named_parameters()}
    weights = TorchWeights(SimpleNamespace(text_encoder=encoder),
                           {"text_encoder": lambda: copy.deepcopy(tiny_parts.text_encoder)})
    weights.drop("text_encoder", keep=norm)
    assert is_empty(encoder) and not is_empty(norm)
    for name, tensor in norm.named_parameters():
        pointer, values = before[name]
        # its own memory: a view into the loaded weights would keep the whole loaded file mapped (0.46 GiB)
        assert tensor.data_ptr() != pointer and torch.equal(tensor, values) and not tensor.requires_grad, name
    weights.ensure("text_encoder", "to convert it again")
    assert not is_empty(encoder) and weights.loads == ["text_encoder"]
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(encoder(ids)[0], tiny_parts.text_encoder(ids)[0])
