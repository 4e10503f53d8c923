"""Build entry point for colcon (ament_python) on a ROS 2 robot.

pip reads the package metadata from pyproject.toml; this file adds only what an
ament package needs: the package marker in the ament index, package.xml, the
launch files and the robot configs under share/steer.
"""

from glob import glob

from setuptools import Distribution, setup


class _Distribution(Distribution):
    """Keeps ``python_requires`` a plain string once pyproject.toml is applied.

    colcon reads the setup information back with ``ast.literal_eval``; setuptools turns
    ``requires-python`` into a ``SpecifierSet``, whose repr is not a literal.
    """

    def parse_config_files(self, *args, **kwargs):
        super().parse_config_files(*args, **kwargs)
        if getattr(self, "python_requires", None) is not None:
            self.python_requires = str(self.python_requires)
        if getattr(self.metadata, "python_requires", None) is not None:
            self.metadata.python_requires = str(self.metadata.python_requires)


setup(
    distclass=_Distribution,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/steer"]),
        ("share/steer", ["package.xml"]),
        ("share/steer/launch", sorted(glob("launch/*.launch.py"))),
        ("share/steer/config", sorted(glob("robot/config/*.yaml"))),
    ],
)
