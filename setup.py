"""Build entry point for colcon (ament_python) on a ROS 2 robot.

pip reads the package metadata from pyproject.toml; this file adds only what an
ament package needs: the package marker in the ament index, package.xml, the
launch files and the robot configs under share/steer.
"""

from glob import glob

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/steer"]),
        ("share/steer", ["package.xml"]),
        ("share/steer/launch", sorted(glob("launch/*.launch.py"))),
        ("share/steer/config", sorted(glob("robot/config/*.yaml"))),
    ],
)
