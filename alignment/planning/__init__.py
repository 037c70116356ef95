"""The memory planner: one optimizer step of a recipe's training simulated on fake tensors
(:func:`alignment.planning.plan.plan_recipe`, ``alignment plan``)."""

from alignment.planning.plan import Plan, plan_recipe

__all__ = ["Plan", "plan_recipe"]
