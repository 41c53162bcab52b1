"""The knowledge world's old module names still import, as the same objects."""


def test_data_world_is_the_world():
    from edit_grpo_trl.data.world.model import ensure_world_model
    from edit_grpo_trl.data.world.world import KnowledgeWorld

    import edit_grpo_trl.data.world as old
    import edit_grpo_trl.world as new

    assert old.KnowledgeWorld is new.KnowledgeWorld is KnowledgeWorld
    assert ensure_world_model is new.ensure_world_model
    assert set(old.__all__) == set(new.__all__)
