"""Real-model layouts built from torch.nn only (torchvision and transformers are not importable here).

Each factory returns a fresh model at initialization, with the module names
of the library it imitates, so that tests and benchmarks/bench_torch.py
diagnose what practitioners run:

- `resnet18`, `resnet50`: torchvision's ResNet layout (BasicBlock, Bottleneck;
  conv1/bn1/relu/maxpool/layer1..4/avgpool/fc) and its init.
- `attention_only`: an embedding, then MultiheadAttention layers with no skip
  and no LayerNorm: pure attention, which loses rank doubly exponentially
  with depth (Dong et al. 2021).
- `encoder`: an embedding and an nn.TransformerEncoder (batch_first=True).
- `gpt2`: GPT-2's block layout (ln_1, attn.c_attn, attn.c_proj, ln_2,
  mlp.c_fc, mlp.c_proj) with the module names transformers uses.
- `bert`: a BERT-base-shaped encoder (hidden 256, 12 layers, 4 heads) with
  word, position and token-type embeddings, returning a ModelOutput-like
  object with last_hidden_state and pooler_output.
- `dict_output`, `dataclass_output`: models returning a dict and a dataclass.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

VOCAB = 100


# ---------------------------------------------------------------- ResNet (torchvision layout)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width)


def resnet50(num_classes: int = 1000, width: int = 64) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width)


def tiny_resnet() -> ResNet:
    """ResNet-18's layout at width 8 and 10 classes: the same modules, small enough for unit tests."""
    return resnet18(num_classes=10, width=8)


# ---------------------------------------------------------------- attention stacks


class AttentionOnly(nn.Module):
    """Token embedding, then `depth` MultiheadAttention layers, h <- attn(h, h, h)[0]: no skips, no norms."""

    def __init__(self, depth: int = 12, dim: int = 64, heads: int = 4):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(depth))

    def forward(self, tokens):
        h = self.emb(tokens)
        for layer in self.attn:
            h = layer(h, h, h)[0]
        return h


def attention_only(depth: int = 12, dim: int = 64, heads: int = 4) -> AttentionOnly:
    return AttentionOnly(depth, dim, heads)


class Encoder(nn.Module):
    """Token embedding and an nn.TransformerEncoder (batch_first=True, post-norm, skips)."""

    def __init__(self, depth: int = 6, dim: int = 64, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, tokens):
        return self.encoder(self.emb(tokens))


def encoder(depth: int = 6, dim: int = 64, heads: int = 4) -> Encoder:
    return Encoder(depth, dim, heads)


# ---------------------------------------------------------------- GPT-2 layout


class GPT2Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        q, k, v = self.c_attn(x).split(dim, dim=2)
        q, k, v = (t.view(n, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(n, length, dim))


class GPT2MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = GPT2Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = GPT2MLP(dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, depth: int = 4, dim: int = 256, heads: int = 4, positions: int = 128):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, dim)
        self.wpe = nn.Embedding(positions, dim)
        self.h = nn.ModuleList(GPT2Block(dim, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


def gpt2(depth: int = 4, dim: int = 256, heads: int = 4) -> GPT2:
    return GPT2(depth, dim, heads)


# ---------------------------------------------------------------- BERT layout, ModelOutput-like return


class ModelOutput(OrderedDict):
    """transformers.utils.ModelOutput's behaviour: a dict whose fields are also attributes and tuple items."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class BertSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape

        def split(t):
            return t.view(n, length, self.heads, dim // self.heads).transpose(1, 2)

        scores = split(self.query(x)) @ split(self.key(x)).transpose(-1, -2) / math.sqrt(dim // self.heads)
        context = scores.softmax(-1) @ split(self.value(x))
        return context.transpose(1, 2).reshape(n, length, dim)


class BertResidual(nn.Module):
    """dense, dropout, then LayerNorm(h + residual): BertSelfOutput / BertOutput."""

    def __init__(self, din: int, dim: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(din, dim)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention = nn.ModuleDict({"self": BertSelfAttention(dim, heads),
                                        "output": BertResidual(dim, dim, dropout)})
        self.intermediate = nn.Sequential(OrderedDict(dense=nn.Linear(dim, 4 * dim), intermediate_act_fn=nn.GELU()))
        self.output = BertResidual(4 * dim, dim, dropout)

    def forward(self, x):
        a = self.attention["output"](self.attention["self"](x), x)
        return self.output(self.intermediate(a), a)


class BertEmbeddings(nn.Module):
    def __init__(self, dim: int, positions: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, dim)
        self.position_embeddings = nn.Embedding(positions, dim)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
        token_type = torch.zeros_like(tokens)  # one segment: every id 0, a constant input by construction
        h = self.word_embeddings(tokens) + self.position_embeddings(positions) + self.token_type_embeddings(token_type)
        return self.dropout(self.LayerNorm(h))


class Bert(nn.Module):
    def __init__(self, depth: int = 12, dim: int = 256, heads: int = 4, positions: int = 512, dropout: float = 0.1):
        super().__init__()
        self.embeddings = BertEmbeddings(dim, positions, dropout)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(BertLayer(dim, heads, dropout) for _ in range(depth))})
        self.pooler = nn.Sequential(OrderedDict(dense=nn.Linear(dim, dim), activation=nn.Tanh()))

    def forward(self, tokens):
        h = self.embeddings(tokens)
        for layer in self.encoder["layer"]:
            h = layer(h)
        return ModelOutput(last_hidden_state=h, pooler_output=self.pooler(h[:, 0]))


def bert(depth: int = 12, dim: int = 256, heads: int = 4) -> Bert:
    return Bert(depth, dim, heads)


# ---------------------------------------------------------------- structured returns


class DictOutput(nn.Module):
    """A body returning a dict (features, logits) whose parts are recorded as `body.features`, `body.logits`."""

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.fc(x))
            return {"features": h, "logits": self.head(h), "count": 3, "ids": torch.ones(x.shape[0], dtype=torch.long)}

    def __init__(self):
        super().__init__()
        self.body = self.Body()

    def forward(self, x):
        return self.body(x)


@dataclass
class Pair:
    hidden: torch.Tensor
    extras: tuple


class DataclassOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)

    def forward(self, x):
        h = self.fc(x)
        return Pair(hidden=h, extras=(torch.tanh(h), [h * 2.0]))


def dict_output() -> DictOutput:
    return DictOutput()


def dataclass_output() -> DataclassOutput:
    return DataclassOutput()
