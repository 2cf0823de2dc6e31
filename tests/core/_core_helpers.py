"""Sources of fake plugins used by the core tests."""

GOOD_PLUGIN = """
    import rewardsql

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        '''1.0 when the answer equals the ground truth.'''
        return {"score": float(solution_str.strip() == str(ground_truth).strip())}

    def double_adv(token_level_rewards, response_mask, index=None, config=None, **kwargs):
        adv = token_level_rewards * 2 * response_mask
        return adv, adv

    class LengthManager(rewardsql.RewardManager):
        calls = 0

        def score_batch(self, requests):
            type(self).calls += 1
            return [rewardsql.RewardResult(float(len(r.response)), extra={"n": len(r.response)})
                    for r in requests]

    @rewardsql.hookimpl
    def rewardsql_reward_functions(register):
        register("exact_match", compute_score, aliases=("em",), summary="exact string match")

    @rewardsql.hookimpl
    def rewardsql_advantage_estimators(register):
        register("double_adv", double_adv, aliases=("compute_double_advantage",))

    @rewardsql.hookimpl
    def rewardsql_reward_managers(register):
        register("length_manager", LengthManager)
"""

BROKEN_PLUGIN = """
    raise RuntimeError("boom at import")
"""

CONFLICT_PLUGIN = """
    import rewardsql

    def other_em(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return 0.0

    def fine(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return 1.0

    @rewardsql.hookimpl
    def rewardsql_reward_functions(register):
        register("exact_match", other_em)
        register("always_one", fine)
"""
