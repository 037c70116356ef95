"""The loss families of the online-learning environments (alignment.tasks.online_learning), in a module
without torch so that the command line can list them at once."""

FAMILIES = ("uniform", "gaussian", "drift", "adversarial")
