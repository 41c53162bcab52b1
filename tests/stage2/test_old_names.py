"""Stage 2's old package name still imports, as the same objects (user code, pickled training args)."""

import pickle


def test_trainer_is_stage2():
    from edit_grpo_trl.trainer.pgaa import pgaa_advantages

    import edit_grpo_trl.stage2.pgaa as pgaa
    import edit_grpo_trl.trainer as old
    from edit_grpo_trl import EditGRPOConfig, EditGRPOTrainer

    assert pgaa_advantages is pgaa.pgaa_advantages
    assert old.EditGRPOConfig is EditGRPOConfig and old.EditGRPOTrainer is EditGRPOTrainer
    assert pickle.loads(b"cedit_grpo_trl.trainer.config\nEditGRPOConfig\n.") is EditGRPOConfig
