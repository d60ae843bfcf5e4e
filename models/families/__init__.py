"""One detector family per module (`@register`), plus the templates several families share (residual, language_model).

May import anomalake.models (base, registry, training, distributed), numpy and Keras; nothing else of the package
imports a family module by name: the registry discovers them."""
