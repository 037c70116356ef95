"""The built-in methods, one module each (its config, trainer and ``@register``): the registry imports every
module here (alignment.trainers.registry), so adding a method is adding a file; methods from other packages
register through the ``alignment.methods`` entry point."""
