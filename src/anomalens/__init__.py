"""anomalens: find anomalies in industrial images and video after learning only from normal examples.

>>> import anomalens
>>> run = anomalens.train_image_model("data", "bottle")          # doctest: +SKIP
>>> anomalens.evaluate_image_model(run.run_dir).metrics            # doctest: +SKIP
"""

__version__ = "0.1.0"
