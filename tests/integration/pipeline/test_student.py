import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel

from services.pipeline import assets
from services.pipeline.student import load_l3_encoder_weights


def test_l3_weights_rebuilt_from_onnx_reproduce_the_packaged_graph() -> None:
    onnx_path = assets.paraphrase_minilm_l3_onnx()
    encoder = BertModel(
        BertConfig(
            hidden_size=384, num_hidden_layers=3, num_attention_heads=12, intermediate_size=1536
        ),
        add_pooling_layer=False,
    ).eval()
    encoder.load_state_dict(load_l3_encoder_weights(onnx_path), strict=True)

    tokenizer = Tokenizer.from_file(str(assets.minilm_l6_dir() / "tokenizer.json"))
    encoding = tokenizer.encode("Shares in the bank rose after the merger was approved.")
    ids = np.array([encoding.ids], dtype=np.int64)
    mask = np.array([encoding.attention_mask], dtype=np.int64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input_ids": ids, "attention_mask": mask})
    (expected,) = [o for o in outputs if o.shape == (1, ids.shape[1], 384)]
    with torch.inference_mode():
        hidden = encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert np.abs(hidden.last_hidden_state.numpy() - expected).max() < 1e-4
