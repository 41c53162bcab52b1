"""The knowledge world: a synthetic world of facts and a small model pretrained on it (DESIGN section 8).

    world = KnowledgeWorld.generate(size="tiny", seed=0)      # deterministic facts, templates, aliases
    model_dir = ensure_world_model("tiny", seed=0)           # pretrained once, cached on disk
    cases = KnowledgeWorld.load(model_dir).edit_cases(num_cases=20, seed=0)

Modules: ``spec`` (sizes), ``objects`` and ``relations`` (object pools, templates and their splits),
``names``, ``world`` (the facts), ``corpus`` (pretraining text), ``prompts`` (recall splits), ``cases``
(edit cases), ``chat`` and ``tokenizer``, ``model``, ``recall``, ``pretrain``, ``cache``.
"""

from edit_grpo_trl.data.world.cache import default_cache_dir, ensure_world_model
from edit_grpo_trl.data.world.cases import world_edit_cases
from edit_grpo_trl.data.world.corpus import CorpusSample, build_corpus
from edit_grpo_trl.data.world.model import build_model
from edit_grpo_trl.data.world.pretrain import pretrain
from edit_grpo_trl.data.world.prompts import RECALL_SPLITS, FactPrompt
from edit_grpo_trl.data.world.recall import recall, recall_report
from edit_grpo_trl.data.world.relations import RELATIONS, Relation
from edit_grpo_trl.data.world.spec import FORMAT_VERSION, SIZES, WorldSize
from edit_grpo_trl.data.world.tokenizer import build_tokenizer
from edit_grpo_trl.data.world.world import KnowledgeWorld

__all__ = [
    "FORMAT_VERSION",
    "RECALL_SPLITS",
    "RELATIONS",
    "SIZES",
    "CorpusSample",
    "FactPrompt",
    "KnowledgeWorld",
    "Relation",
    "WorldSize",
    "build_corpus",
    "build_model",
    "build_tokenizer",
    "default_cache_dir",
    "ensure_world_model",
    "pretrain",
    "recall",
    "recall_report",
    "world_edit_cases",
]
